import requests
requests.post("%s/v1/messages/%s" % ("https://api.anthropic.com", "batches"), json={})
