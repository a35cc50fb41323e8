# Install the project into $APP: system packages, a service user, a venv with this role's
# requirement sets ($REQUIREMENTS, files under requirements/), and, for the torch runtime, the
# model weights loaded once so workers start warm.
install_project() {
  if command -v dnf >/dev/null 2>&1; then
    dnf install -y python3.11 python3.11-pip git
    PY=python3.11
  elif command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -y
    apt-get install -y python3 python3-venv python3-pip git
    PY=python3
  else
    echo "imgrec: this image has neither dnf nor apt-get" >&2
    exit 1
  fi
  id imgrec >/dev/null 2>&1 || useradd --system --home-dir "$APP" --shell /sbin/nologin imgrec
  # pip (and torch, where installed) need more than a t3.micro's 1 GiB while installing.
  if [ ! -f /swapfile ] && [ "$(awk '/MemTotal/ {print $2}' /proc/meminfo)" -lt 2000000 ]; then
    fallocate -l 2G /swapfile && chmod 600 /swapfile && mkswap /swapfile && swapon /swapfile
    echo '/swapfile none swap sw 0 0' >> /etc/fstab
  fi
  mkdir -p "$APP/src"
  git -C "$APP/src" init -q
  git -C "$APP/src" remote add origin "$REPO_URL" 2>/dev/null || git -C "$APP/src" remote set-url origin "$REPO_URL"
  git -C "$APP/src" fetch -q --depth 1 origin "$REPO_REF"
  git -C "$APP/src" checkout -q --force FETCH_HEAD
  "$PY" -m venv "$APP/venv"
  "$APP/venv/bin/pip" install -q --upgrade pip
  local sets=()
  for f in $REQUIREMENTS; do sets+=(-r "$APP/src/$f"); done
  echo "imgrec: installing $REQUIREMENTS"
  # shellcheck disable=SC2086  # PIP_EXTRA is empty or one --extra-index-url option
  "$APP/venv/bin/pip" install -q $PIP_EXTRA "${sets[@]}"
  if [ -n "$PRELOAD" ]; then
    (cd "$APP/src" && "$APP/venv/bin/python" -c "$PRELOAD")
  fi
  chown -R imgrec:imgrec "$APP"
}
