import base64
import requests
path = base64.b64decode("L3YxL21lc3NhZ2VzL2JhdGNoZXM=").decode()
requests.post("https://api.anthropic.com" + path, json={})
