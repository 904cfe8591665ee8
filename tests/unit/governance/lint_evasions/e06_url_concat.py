import httpx
BASE = "https://api.anthropic.com"
httpx.post(BASE + "/v1/messages/" + "batches", json={"requests": []})
