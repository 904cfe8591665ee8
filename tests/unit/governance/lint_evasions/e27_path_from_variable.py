# Known miss: the path comes from configuration at run time; the reconcile sweep catches the batch.
import requests
from airflow.sdk import Variable

requests.post(Variable.get("anthropic_url"), json={})
