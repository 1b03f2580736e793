"""convgen clients: the asyncio client library and the convgen command line."""
