"""The service's routers: :mod:`search`, :mod:`items` (the archive), :mod:`service` (health,
info) and :mod:`pages` (the web page and the docs page)."""
