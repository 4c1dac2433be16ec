"""Functions: steps of a route phase that change a whole message.

Built-in steps (``split_date``, ``set``, ``rename``, ``move``, ``remove``, ``map``) run in the
gateway process. Operator functions, Python modules in the configured folder, run in a pool of
worker processes that hold none of the gateway's secrets (``gateway.functions.pool``).
"""
