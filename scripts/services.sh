#!/usr/bin/env bash
# Local servers on 127.0.0.1 for development and tests, installed from apt when missing:
#   Kafka (scripts/kafka.sh), Redis, an SMTP sink writing a maildir, and the CLI tools
#   (kcat, prometheus/promtool, alertmanager, docker-compose for `docker-compose config`).
#   scripts/services.sh start | stop | env | reset (wipes all local data: Kafka, Redis, state, mail)
# Idempotent: a server already answering on its port is left alone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/lib.sh"

work=${PICKPLE_WORK:-$root/.work}
redis_port=${PICKPLE_REDIS_PORT:-16379}
smtp_port=${PICKPLE_SMTP_PORT:-12525}
maildir=$work/mail

install() {
  apt_install redis-server redis-sentinel python3-aiosmtpd kcat prometheus prometheus-alertmanager docker-compose
}

start_redis() {
  if port_open "$redis_port"; then log "redis already on 127.0.0.1:$redis_port"; return; fi
  mkdir -p "$work/redis"
  # Append-only, like ops/redis/master.conf: the views sink's offsets live in Kafka, which keeps
  # its data across down.sh/up.sh, so the views in Redis must survive the restart too (an empty
  # Redis behind committed offsets would never be refilled).
  redis-server --bind 127.0.0.1 --port "$redis_port" --daemonize yes --save "" --appendonly yes \
    --dir "$work/redis" --pidfile "$work/redis/redis.pid" --logfile "$work/redis/redis.log"
  wait_for redis 30 "port_open $redis_port"
  log "redis on 127.0.0.1:$redis_port"
}

start_smtp() {
  if port_open "$smtp_port"; then log "smtp sink already on 127.0.0.1:$smtp_port"; return; fi
  # aiosmtpd's Mailbox only lays out a maildir it creates itself; lay it out for an existing one.
  mkdir -p "$maildir"/tmp "$maildir"/new "$maildir"/cur
  # Debian's aiosmtpd lives in the system Python, whatever python3 is first on PATH.
  nohup /usr/bin/python3 -m aiosmtpd -n -l "127.0.0.1:$smtp_port" \
    -c aiosmtpd.handlers.Mailbox "$maildir" > "$work/smtp.log" 2>&1 &
  echo $! > "$work/smtp.pid"
  wait_for "smtp sink" 30 "port_open $smtp_port"
  log "smtp sink on 127.0.0.1:$smtp_port (mail in $maildir)"
}

stop_pidfile() { [ -f "$1" ] && kill "$(cat "$1")" 2>/dev/null; rm -f "$1"; }

case "${1:-start}" in
  start)
    install
    "$here/kafka.sh" start
    start_redis
    start_smtp
    ;;
  stop)
    stop_pidfile "$work/smtp.pid"
    stop_pidfile "$work/redis/redis.pid"
    "$here/kafka.sh" stop
    ;;
  reset)
    # Every local datum goes together: Kafka's topics and offsets, the Redis views built from
    # them, the processors' sled state (whose checkpoints are changelog offsets) and the mail.
    # Wiping one alone leaves the others pointing at data that no longer exists.
    [ -z "$(ls "$work"/pids/*.pid 2>/dev/null)" ] || die "processors are running: ./scripts/down.sh first"
    stop_pidfile "$work/smtp.pid"
    stop_pidfile "$work/redis/redis.pid"
    "$here/kafka.sh" reset
    rm -rf "$work/redis" "$work/state" "$maildir"
    log "local data wiped (Kafka, Redis, processor state, mail)"
    ;;
  env)
    # Settings that tests and processors read; `eval "$(scripts/services.sh env)"`.
    # A shop pointed at the cluster (`eval "$(scripts/kafka.sh cluster env)"`) stays on it.
    echo "export PICKPLE_BROKERS=${PICKPLE_BROKERS:-127.0.0.1:${PICKPLE_KAFKA_PORT:-19092}}"
    echo "export PICKPLE_REDIS_URL=redis://127.0.0.1:$redis_port"
    echo "export PICKPLE_SMTP=127.0.0.1:$smtp_port"
    echo "export PICKPLE_MAILDIR=$maildir"
    ;;
  *) die "usage: $0 start|stop|reset|env" ;;
esac
