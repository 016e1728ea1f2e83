"""What the benchmark scripts share: processes, sockets, G.711, statistics, rtpengine's ng.

The scripts in ``bench/`` run as ``python bench/NAME.py``, so this package is importable as
``harness`` (the script's folder is first on ``sys.path``; the smoke tests in ``tests/bench``
put it there too).

* :mod:`harness.procs` — child processes placed on a core, stopped with their parent, their CPU
  time read from ``/proc``;
* :mod:`harness.net` — free loopback ports, ``sendmmsg``/``recvmmsg`` through ctypes, RTP socket
  pairs with kernel receive timestamps;
* :mod:`harness.g711` — µ-law tables and tone frames for the load generators;
* :mod:`harness.stats` — percentiles and rounding for the reports;
* :mod:`harness.ng` — a small rtpengine "ng" client (bencode over UDP).
"""
