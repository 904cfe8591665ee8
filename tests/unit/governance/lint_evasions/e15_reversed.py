import requests
requests.post("https://api.anthropic.com" + "sehctab/segassem/1v/"[::-1], json={})
