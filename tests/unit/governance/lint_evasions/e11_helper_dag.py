from helpers.batching import send_all
send_all([])
