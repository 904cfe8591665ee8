import requests
requests.post("{}/v1/{}/{}".format("https://api.anthropic.com", "messages", "batches"), json={})
