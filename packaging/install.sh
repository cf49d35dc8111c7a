#!/bin/sh
# Install Veylor as a systemd service, from this source tree (run as root):
#
#   packaging/install.sh [--no-start] [--wheels DIR]
#
# - a virtual environment in /opt/veylor with Veylor (pip install .; with
#   --wheels, from the wheels in DIR only, with no network: packaging/build-image
#   makes them in packaging/wheels);
# - /etc/veylor/config.yaml and /etc/veylor/routes.d/ from packaging/config/ (an
#   existing configuration is left as it is);
# - the man page (/usr/local/share/man/man1/veylor.1) and the shell completions
#   (bash, zsh; fish's if fish is there), linked from /opt/veylor/share;
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
        --wheels) wheels=$(cd "$2" && pwd); shift 2 ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "install.sh: Veylor needs Python 3.11 or newer ($python is $("$python" -V 2>&1)); set PYTHON=" >&2
    exit 1
}
# `python3 -m venv` hides why pip could not be put in (its ensurepip's output): on a
# failure, show it, and try once more in two steps, which says what failed.
if ! out=$("$python" -m venv /opt/veylor 2>&1); then
    echo "install.sh: $python -m venv /opt/veylor failed: $out" >&2
    "$python" -m venv --clear --without-pip /opt/veylor && /opt/veylor/bin/python -m ensurepip --upgrade --default-pip >/dev/null || {
        echo "install.sh: cannot make a virtual environment with pip in /opt/veylor (Debian: apt install python3-venv)" >&2
        exit 1
    }
fi
if [ -n "$wheels" ]; then
    /opt/veylor/bin/pip install -q --upgrade --no-index --find-links "$wheels" veylor
else
    /opt/veylor/bin/pip install -q --upgrade pip
    /opt/veylor/bin/pip install -q --upgrade .
fi
ln -sf /opt/veylor/bin/veylor /usr/local/bin/veylor
# The man page and the shell completions come in the wheel's data (/opt/veylor/share);
# linked where man and each shell look, as the command is, so an upgrade updates them:
# man veylor; tab completion in bash (with the bash-completion package), zsh and fish.
share=/opt/veylor/share
link() { mkdir -p "$(dirname "$2")" && ln -sf "$share/$1" "$2"; }
link man/man1/veylor.1 /usr/local/share/man/man1/veylor.1
link bash-completion/completions/veylor /usr/local/share/bash-completion/completions/veylor
link zsh/site-functions/_veylor /usr/local/share/zsh/site-functions/_veylor
# fish reads /usr/local/share only when XDG_DATA_DIRS says so; /etc/fish is its own
# place for all users' completions (made only when fish is there).
if [ -d /etc/fish ] || command -v fish >/dev/null 2>&1; then
    link fish/vendor_completions.d/veylor.fish /etc/fish/completions/veylor.fish
fi
if command -v mandb >/dev/null 2>&1; then
    mandb -q /usr/local/share/man 2>/dev/null || true  # man -k veylor now, not after the daily run
fi

# A static system user: the unit's DynamicUser= takes it (systemd.exec(5)), so its
# group can be given to the users whose clients connect to Veylor's Unix sockets
# (mode 0660) and who run `veylor status` or `veylor top` (the admin socket).
getent passwd veylor >/dev/null || useradd --system --user-group --no-create-home \
    --home-dir /nonexistent --shell /usr/sbin/nologin veylor
install -d -m 0755 /etc/veylor /etc/veylor/routes.d
if [ ! -e /etc/veylor/config.yaml ]; then
    install -m 0644 packaging/config/config.yaml /etc/veylor/config.yaml
    install -m 0644 packaging/config/routes.d/README /etc/veylor/routes.d/README
    echo "install.sh: wrote /etc/veylor/config.yaml: set your upstream in it"
fi
# The packaged unit is replaced on each install: change it with `systemctl edit veylor`
# (a drop-in that survives), e.g. for LimitNOFILE=.
install -m 0644 packaging/veylor.service /etc/systemd/system/veylor.service
systemctl daemon-reload
if [ "$start" = yes ]; then
    if systemctl is-active --quiet veylor; then
        systemctl enable veylor
        systemctl restart veylor  # an upgrade: the new version runs
    else
        systemctl enable --now veylor
    fi
    systemctl --no-pager status veylor || true
fi
echo "install.sh: done. Logs: journalctl -u veylor -f; state: veylor status -c /etc/veylor/config.yaml"
