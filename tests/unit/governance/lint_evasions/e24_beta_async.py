from anthropic import AsyncAnthropic


async def go():
    async with AsyncAnthropic() as client:
        beta = client.beta
        await beta.messages.batches.create(requests=[])
