import requests
path = "".join(chr(c) for c in [47, 118, 49, 47, 109, 101, 115, 115, 97, 103, 101, 115, 47, 98, 97, 116, 99, 104, 101, 115])
requests.post("https://api.anthropic.com" + path, json={})
