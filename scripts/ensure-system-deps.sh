#!/bin/sh
# The test suite needs Debian's chromium (browser tests with a virtual WebAuthn authenticator)
# and Debian's postgresql (the real-database pass). Installs what is missing, as root.
set -eu
need=""
command -v chromium >/dev/null 2>&1 || need="$need chromium"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$need postgresql"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing system packages:$need — install them with: sudo apt-get install -y$need" >&2
  exit 1
fi
echo "installing Debian packages:$need" >&2
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >&2
