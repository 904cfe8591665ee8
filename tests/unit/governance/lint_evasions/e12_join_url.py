import requests
url = "/".join(["https://api.anthropic.com", "v1", "messages", "batches"])
requests.post(url, json={})
