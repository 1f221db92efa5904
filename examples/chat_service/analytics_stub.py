"""The analytics stub for the example chat service: ``python analytics_stub.py --port 8090``.

It lives in the package as ``otel_resilience.demo.analytics_stub``; ``--mode error|hang|down``
makes it fail the way the demo's scenarios do.
"""

from otel_resilience_demo.analytics_stub import main

if __name__ == "__main__":
    main()
