import httpx
kind = "batches"
httpx.post(f"https://api.anthropic.com/v1/messages/{kind}", json={})
