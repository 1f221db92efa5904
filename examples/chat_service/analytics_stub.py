"""The analytics stub for the example chat service: ``python analytics_stub.py --port 8090``.

It lives in the checkout's demo package as ``otel_resilience_demo.analytics_stub``;
``--mode error|hang|down`` makes it fail the way the demo's scenarios do.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout

from otel_resilience_demo.analytics_stub import main

if __name__ == "__main__":
    main()
