import os
import httpx
httpx.post(f"{os.environ['API']}/v1/messages/{os.environ['WHAT']}", json={})
