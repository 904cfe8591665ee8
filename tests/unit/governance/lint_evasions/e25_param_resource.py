def submit(res, requests):
    return res.batches.create(requests=requests)
