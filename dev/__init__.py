"""Tools for working on kubeevent-enricher, used by the tests, the benchmarks and ``make
dev``: the dev stack (``stack``), the test doubles (``fakes``: a Kubernetes API server and
a WeCom sandbox), event builders and process helpers (``support``), a real control plane
built from Go modules (``cluster``) and the vendoring tool (``vendor.py``)."""
