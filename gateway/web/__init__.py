"""The local HTTP API (`[http]`): availability and its live stream, the lot's lanes, alarms,
sessions and events, health, Prometheus metrics and the technician's actions, behind roles.

The server (`server.py`) knows the lot only through :class:`gateway.web.lot.LotView`, which
the daemon's app implements, and takes its actions through `LotControl`, as the control socket
does. aiohttp and prometheus-client are imported by `server.py` and `metrics.py` alone, and
the daemon imports those only when the server is enabled; `live.py` (the availability feed,
which also feeds the retained MQTT state) and `accounts.py` (the CLI's `user add`) need
neither. The web console is `static/` (one page, by hand), with its bay grid and files in
`console.py` and its day report in `today.py`.
"""
