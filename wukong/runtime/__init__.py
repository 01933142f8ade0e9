"""controller-runtime semantics on asyncio.

Today: a typed client for built-in and custom resources (`client`), the
resources it addresses (`resources`) and its errors (`errors`).
"""
