# Sourced by scripts/test and scripts/demo.
#
# ensure_commands CMD=PACKAGE ...: installs the Debian packages of the
# commands this machine lacks when run as root with apt-get; otherwise
# names them and exits. A CMD that starts with / is a file that must be
# executable (e.g. /usr/lib/openssh/sftp-server=openssh-sftp-server).
ensure_commands() {
  local pair cmd pkg missing=()
  for pair in "$@"; do
    cmd=${pair%%=*} pkg=${pair#*=}
    if [[ $cmd == /* ]]; then
      [ -x "$cmd" ] || missing+=("$pkg")
    elif ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
      missing+=("$pkg")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local pkgs
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "$(basename "$0"): installing $pkgs"
    apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
  else
    echo "$(basename "$0"): missing packages: $pkgs(install them, or run this script as root)" >&2
    exit 1
  fi
}

# ensure_python_modules MODULE=PACKAGE ...: the same for modules of the
# system's Python (/usr/bin/python3, which the tests run), e.g.
# asyncssh=python3-asyncssh.
ensure_python_modules() {
  local pair mod pkg missing=()
  for pair in "$@"; do
    mod=${pair%%=*} pkg=${pair#*=}
    /usr/bin/python3 -c "import $mod" >/dev/null 2>&1 || missing+=("/nonexistent/$mod=$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  ensure_commands "${missing[@]}"
}
