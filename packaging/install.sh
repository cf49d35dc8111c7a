#!/bin/sh
# Install Veylor as a systemd service, from this source tree (run as root):
#
#   packaging/install.sh [--no-start] [--wheels DIR]
#
# - a virtual environment in /opt/veylor with Veylor (pip install '.[tui]'; with
#   --wheels, from the wheels in DIR only, with no network: packaging/build-image
#   makes them in packaging/wheels);
# - /etc/veylor/config.yaml and /etc/veylor/routes.d/ from packaging/config/ (an
#   existing configuration is left as it is);
# - the unit /etc/systemd/system/veylor.service;
# - systemctl enable --now veylor (unless --no-start).
# Then: `journalctl -u veylor -f`, `veylor status -c /etc/veylor/config.yaml`,
# `systemctl reload veylor` after a change.
set -eu

start=yes
wheels=
while [ $# -gt 0 ]; do
    case "$1" in
        --no-start) start=no; shift ;;
        --wheels) wheels=$2; shift 2 ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

"$python" -m venv /opt/veylor
if [ -n "$wheels" ]; then
    /opt/veylor/bin/pip install -q --no-index --find-links "$wheels" veylor
else
    /opt/veylor/bin/pip install -q --upgrade pip
    /opt/veylor/bin/pip install -q ".[tui]"
fi
ln -sf /opt/veylor/bin/veylor /usr/local/bin/veylor

install -d -m 0755 /etc/veylor /etc/veylor/routes.d
if [ ! -e /etc/veylor/config.yaml ]; then
    install -m 0644 packaging/config/config.yaml /etc/veylor/config.yaml
    install -m 0644 packaging/config/routes.d/README /etc/veylor/routes.d/README
    echo "install.sh: wrote /etc/veylor/config.yaml: set your upstream in it"
fi
install -m 0644 packaging/veylor.service /etc/systemd/system/veylor.service
systemctl daemon-reload
if [ "$start" = yes ]; then
    systemctl enable --now veylor
    systemctl --no-pager status veylor || true
fi
echo "install.sh: done. Logs: journalctl -u veylor -f; state: veylor status -c /etc/veylor/config.yaml"
