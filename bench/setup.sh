#!/bin/sh
# Install what the benchmark drives: HAProxy 2.6 (proxy under test and the
# HTTP keep-alive backend), wrk (HTTP load), sslh (sslh-fork, sslh-select),
# a C compiler (bench/connload.c) and matplotlib (the plot). Run as root.
set -e
if [ "$(id -u)" != 0 ]; then
    echo "run as root: sudo sh bench/setup.sh" >&2
    exit 1
fi
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy wrk sslh gcc
python3 -m pip install -r "$(dirname "$0")/requirements.txt"
