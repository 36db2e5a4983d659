"""The web console (issue 15): a node's or the fleet's alerts, live, filtered and charted, in a browser.

One component, `WebConsole` (server/console/app.py), serves one hub (server/hub.py, or the aggregator's
FleetHub) on its own HTTP listener, on the asyncio loop that runs the gRPC server: the page is static files
shipped in this package (static/), and the alerts reach it over one server-sent-events stream per page, batched,
resumable from the last cursor as the SDKs resume. `falconet run`, `falconet serve` and `falconet aggregate`
mount it; docs/web-console.md says how to configure and reach it.
"""
