/*
 * The C side of fdpass's interoperability suite (__test__/interop.spec.ts):
 * plain sendmsg(2) and recvmsg(2), as a C daemon would write them.
 *
 *   peer sendmsg send <type> <endpoint> <file>
 *   peer sendmsg recv <type> <endpoint>
 *   peer hostile <case> <type> <endpoint>
 *
 * type: stream, seqpacket or dgram. endpoint: fd:N (an inherited socket),
 * connect:PATH, or listen:PATH (prints {"listening":true} once bound).
 *
 * send: opens <file>, a TCP listener on 127.0.0.1 and a pipe, passes all
 * three in one message whose payload names them, then reads the pipe's other
 * end to EOF and reports what the fdpass side wrote there. recv: receives
 * the three in one message (MSG_CMSG_CLOEXEC, CMSG_SPACE, MSG_CTRUNC
 * checked), reads the file, answers one connection on the listener, writes
 * the pipe, and reports the file's content and the payload.
 *
 * Hostile cases, each followed by a plain message "after" (no descriptors)
 * so the fdpass side can show its channel goes on:
 *   many:N         N descriptors (duplicates of /dev/null) in one message
 *   empty          two descriptors with a zero-length payload
 *   unasked        two descriptors to a receiver that refuses them; reports
 *                  the errno of the sendmsg (0 when the kernel took them)
 *   small-control  receives with control room for one descriptor while the
 *                  fdpass side sends more; reports MSG_CTRUNC and how many
 *                  descriptors arrived anyway (all closed)
 * One JSON line on stdout reports each outcome.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_FDS 253
#define NAMES "file,listener,pipe"

static void fail(const char *what) {
  fprintf(stderr, "c peer: %s: %s\n", what, strerror(errno));
  exit(1);
}

static int socket_type(const char *name) {
  if (strcmp(name, "stream") == 0) return SOCK_STREAM;
  if (strcmp(name, "seqpacket") == 0) return SOCK_SEQPACKET;
  if (strcmp(name, "dgram") == 0) return SOCK_DGRAM;
  fprintf(stderr, "c peer: unknown socket type %s\n", name);
  exit(2);
}

static int unix_address(const char *path, struct sockaddr_un *addr) {
  memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  if (strlen(path) >= sizeof addr->sun_path) {
    fprintf(stderr, "c peer: path too long\n");
    exit(2);
  }
  strcpy(addr->sun_path, path);
  return sizeof *addr;
}

static int open_endpoint(int type, const char *endpoint) {
  if (strncmp(endpoint, "fd:", 3) == 0) return atoi(endpoint + 3);
  struct sockaddr_un addr;
  int sock = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  if (sock < 0) fail("socket");
  if (strncmp(endpoint, "connect:", 8) == 0) {
    socklen_t len = unix_address(endpoint + 8, &addr);
    if (connect(sock, (struct sockaddr *)&addr, len) < 0) fail("connect");
    return sock;
  }
  if (strncmp(endpoint, "listen:", 7) == 0) {
    socklen_t len = unix_address(endpoint + 7, &addr);
    if (bind(sock, (struct sockaddr *)&addr, len) < 0) fail("bind");
    if (listen(sock, 1) < 0) fail("listen");
    printf("{\"listening\":true}\n");
    fflush(stdout);
    int conn = accept4(sock, NULL, NULL, SOCK_CLOEXEC);
    if (conn < 0) fail("accept");
    close(sock);
    return conn;
  }
  fprintf(stderr, "c peer: unknown endpoint %s\n", endpoint);
  exit(2);
}

/* One sendmsg with the payload and the descriptors in one SCM_RIGHTS message;
 * returns 0 or the errno. */
static int send_fds(int sock, const void *data, size_t len, const int *fds, size_t count) {
  union {
    char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
    struct cmsghdr align;
  } control;
  struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (count > 0) {
    memset(&control, 0, sizeof control);
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(count * sizeof(int));
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(count * sizeof(int));
    memcpy(CMSG_DATA(cmsg), fds, count * sizeof(int));
  }
  ssize_t sent;
  do sent = sendmsg(sock, &msg, MSG_NOSIGNAL);
  while (sent < 0 && errno == EINTR);
  return sent < 0 ? errno : 0;
}

/* One recvmsg with `controllen` bytes of control room. Every descriptor that
 * arrived is stored in fds (up to MAX_FDS) and counted in *count, whatever
 * the flags say, so that the caller can close them all. */
static ssize_t recv_fds(int sock, char *data, size_t len, int *fds, size_t controllen, size_t *count, int *flags) {
  union {
    char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
    struct cmsghdr align;
  } control;
  struct iovec iov = {.iov_base = data, .iov_len = len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf};
  msg.msg_controllen = controllen;
  ssize_t got;
  do got = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (got < 0 && errno == EINTR);
  *count = 0;
  *flags = msg.msg_flags;
  if (got < 0) return got;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n && *count < MAX_FDS; i++) memcpy(&fds[(*count)++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
  }
  return got;
}

static void json_string(const char *s, size_t len) {
  putchar('"');
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '"' || ch == '\\') printf("\\%c", ch);
    else if (ch < 0x20) printf("\\u%04x", ch);
    else putchar(ch);
  }
  putchar('"');
}

static void json_hex(const char *s, size_t len) {
  putchar('"');
  for (size_t i = 0; i < len; i++) printf("%02x", (unsigned char)s[i]);
  putchar('"');
}

static size_t read_all(int fd, char *buf, size_t len) {
  size_t total = 0;
  for (;;) {
    ssize_t n = read(fd, buf + total, len - total);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("read");
    if (n == 0 || total + n == len) return total + n;
    total += n;
  }
}

static void write_all(int fd, const char *s) {
  size_t len = strlen(s);
  while (len > 0) {
    ssize_t n = write(fd, s, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("write");
    s += n;
    len -= n;
  }
}

static int tcp_listener(int *port) {
  int sock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0) fail("socket");
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof addr;
  if (bind(sock, (struct sockaddr *)&addr, len) < 0) fail("bind");
  if (listen(sock, 8) < 0) fail("listen");
  if (getsockname(sock, (struct sockaddr *)&addr, &len) < 0) fail("getsockname");
  *port = ntohs(addr.sin_port);
  return sock;
}

static void do_send(int sock, const char *path) {
  int port;
  int pipe_ends[2];
  int file = open(path, O_RDONLY | O_CLOEXEC);
  if (file < 0) fail("open");
  int listener = tcp_listener(&port);
  if (pipe2(pipe_ends, O_CLOEXEC) < 0) fail("pipe");
  int fds[3] = {file, listener, pipe_ends[1]};
  int err = send_fds(sock, NAMES, strlen(NAMES), fds, 3);
  if (err != 0) {
    errno = err;
    fail("sendmsg");
  }
  /* In flight now: these copies go, so EOF on the pipe means the fdpass side
   * closed its copy. */
  close(file);
  close(listener);
  close(pipe_ends[1]);
  char written[4096];
  size_t n = read_all(pipe_ends[0], written, sizeof written);
  close(pipe_ends[0]);
  printf("{\"port\":%d,\"payloads\":[", port);
  json_hex(NAMES, strlen(NAMES));
  printf("],\"pipe\":");
  json_string(written, n);
  printf("}\n");
}

static void do_recv(int sock) {
  char data[1024];
  int fds[MAX_FDS];
  size_t count;
  int flags;
  ssize_t got = recv_fds(sock, data, sizeof data, fds, CMSG_SPACE(3 * sizeof(int)), &count, &flags);
  if (got < 0) fail("recvmsg");
  if ((flags & (MSG_CTRUNC | MSG_TRUNC)) || count != 3) {
    for (size_t i = 0; i < count; i++) close(fds[i]);
    fprintf(stderr, "c peer: expected 3 descriptors, got %zu (flags %#x)\n", count, (unsigned)flags);
    exit(1);
  }
  int cloexec[3];
  for (size_t i = 0; i < 3; i++) cloexec[i] = (fcntl(fds[i], F_GETFD) & FD_CLOEXEC) != 0;
  /* O_NONBLOCK travels with the open file: what Node used comes
   * non-blocking (libuv sets it), and this receiver reads and accepts
   * blocking. */
  for (size_t i = 0; i < count; i++) {
    int fl = fcntl(fds[i], F_GETFL);
    if (fl < 0 || fcntl(fds[i], F_SETFL, fl & ~O_NONBLOCK) < 0) fail("fcntl");
  }
  char content[4096];
  size_t n = read_all(fds[0], content, sizeof content);
  close(fds[0]);
  int conn = accept4(fds[1], NULL, NULL, SOCK_CLOEXEC);
  if (conn < 0) fail("accept");
  write_all(conn, "c accepted on the received listener\n");
  close(conn);
  close(fds[1]);
  write_all(fds[2], "c wrote the received pipe");
  close(fds[2]);
  printf("{\"file\":");
  json_string(content, n);
  printf(",\"payloads\":[");
  json_hex(data, (size_t)got);
  printf("],\"cloexec\":[%s,%s,%s]}\n", cloexec[0] ? "true" : "false", cloexec[1] ? "true" : "false", cloexec[2] ? "true" : "false");
}

static void send_after(int sock) {
  int err = send_fds(sock, "after", 5, NULL, 0);
  if (err != 0) {
    errno = err;
    fail("sendmsg after");
  }
}

static void do_hostile(int sock, const char *which) {
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) fail("open /dev/null");
  int fds[MAX_FDS];
  if (strncmp(which, "many:", 5) == 0) {
    int n = atoi(which + 5);
    if (n < 1 || n > MAX_FDS) {
      fprintf(stderr, "c peer: many:N takes 1 to %d\n", MAX_FDS);
      exit(2);
    }
    for (int i = 0; i < n; i++) fds[i] = devnull;
    int err = send_fds(sock, "many", 4, fds, n);
    if (err != 0) {
      errno = err;
      fail("sendmsg");
    }
    send_after(sock);
    printf("{\"sent\":%d}\n", n);
  } else if (strcmp(which, "empty") == 0) {
    fds[0] = fds[1] = devnull;
    int err = send_fds(sock, "", 0, fds, 2);
    if (err != 0) {
      errno = err;
      fail("sendmsg");
    }
    send_after(sock);
    printf("{\"sent\":2}\n");
  } else if (strcmp(which, "unasked") == 0) {
    fds[0] = fds[1] = devnull;
    int err = send_fds(sock, "unasked", 7, fds, 2);
    send_after(sock);
    printf("{\"errno\":%d,\"error\":", err);
    json_string(strerror(err), strlen(strerror(err)));
    printf("}\n");
  } else if (strcmp(which, "small-control") == 0) {
    char data[64];
    size_t count;
    int flags;
    /* CMSG_LEN, not CMSG_SPACE: room for exactly one descriptor. */
    ssize_t got = recv_fds(sock, data, sizeof data, fds, CMSG_LEN(sizeof(int)), &count, &flags);
    if (got < 0) fail("recvmsg");
    for (size_t i = 0; i < count; i++) close(fds[i]);
    send_after(sock);
    printf("{\"ctrunc\":%s,\"arrived\":%zu,\"payload\":", (flags & MSG_CTRUNC) ? "true" : "false", count);
    json_string(data, (size_t)got);
    printf("}\n");
  } else {
    fprintf(stderr, "c peer: unknown hostile case %s\n", which);
    exit(2);
  }
  close(devnull);
}

int main(int argc, char **argv) {
  /* A peer whose test process died must not wait forever (a datagram socket
   * has no end of stream to wake it). */
  alarm(60);
  if (argc < 5) {
    fprintf(stderr, "usage: peer sendmsg <send|recv> <type> <endpoint> [file] | peer hostile <case> <type> <endpoint>\n");
    return 2;
  }
  int sock = open_endpoint(socket_type(argv[3]), argv[4]);
  if (strcmp(argv[1], "hostile") == 0) {
    do_hostile(sock, argv[2]);
  } else if (strcmp(argv[1], "sendmsg") == 0 && strcmp(argv[2], "send") == 0 && argc >= 6) {
    do_send(sock, argv[5]);
  } else if (strcmp(argv[1], "sendmsg") == 0 && strcmp(argv[2], "recv") == 0) {
    do_recv(sock);
  } else {
    fprintf(stderr, "c peer: unknown command\n");
    return 2;
  }
  close(sock);
  return 0;
}
