import codecs
import requests
requests.post("https://api.anthropic.com" + codecs.decode("/i1/zrffntrf/ongpurf", "rot13"), json={})
