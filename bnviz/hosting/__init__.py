"""What keeps a public server alive under its audience — and knows nothing about batch norm.

- ``serve``: one memory budget for the whole server, with a fair queue, cancellation and a CPU
  bound for the heavy runs; the shared cache of finished reports; glibc's allocator tuned.
- ``memory``: measuring the peak a call adds (the resident set's high-water mark, and its child
  processes); what a worker process costs.
- ``forks``: a fork server that preloads a module it is given, and work run in its forks,
  bounded in time, none left behind.
- ``procmem``: a process's private memory, read from /proc.

The pages and the explorer's engines import this package; it imports nothing of bnviz (the fork
server's warm-up is a module name passed in). Each engine's config states its own memory
estimate (``config.estimate_bytes()``), so that all this package ever sees is a byte count.
"""
