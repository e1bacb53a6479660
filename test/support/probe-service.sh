# One connection on stdin/stdout: a GET gets a file from /www (or a 404), any other line is a
# command of a tiny line protocol (PING, ECHO text), answered until the client stops sending.
cr=$(printf '\r')
reply_file() {
  printf 'HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %s\r\nConnection: close\r\n\r\n' "$1" "$(wc -c < "$2")"
  cat "$2"
}
while IFS= read -r line; do
  line=${line%"$cr"}
  case "$line" in
    "GET "*)
      path=${line#GET }
      path=${path%% *}
      while IFS= read -r h; do [ -z "${h%"$cr"}" ] && break; done
      case "$path" in
        *..*) reply_file '400 Bad Request' /www/400.txt ;;
        *) if [ -f "/www$path" ]; then reply_file '200 OK' "/www$path"; else reply_file '404 Not Found' /www/404.txt; fi ;;
      esac
      exit 0 ;;
    PING) printf '+PONG\r\n' ;;
    "ECHO "*) printf '%s\r\n' "${line#ECHO }" ;;
    *) printf -- '-ERR unknown command\r\n' ;;
  esac
done
