"""Several gateway processes behind one set of listeners: ``vaultgate run --workers N``.

``sockets`` binds the reverse and admin listeners once, in the supervising process. ``worker``
is what each forked worker runs: a whole gateway on those inherited sockets. ``supervisor``
starts the workers, forwards SIGTERM, SIGINT and SIGHUP to them and replaces a worker that dies.
"""
