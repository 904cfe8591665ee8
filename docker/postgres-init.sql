-- The ledger's own database (ledger, admission, spend commitments), beside Airflow's metadata
-- database on the same server. Run by the postgres image on its first start only.
CREATE DATABASE claude_batches OWNER airflow;
