// The HTTP server bench/whole-path.sh measures every path against: a thread per connection, HTTP/1.1, so that the
// server is never what limits a path (a Python server was: ~250 µs per connection).
//
//     GET /small      -> 200 "ok\n" (keep-alive, or closed after the answer when the request says Connection: close)
//     GET /bytes/N    -> 200 with N bytes (a 1 MiB pseudo-random block repeated), for the curl of 1 GiB
//
// It holds any number of idle connections (the 1,000 idle flows: 64 KiB stacks). Usage: whole-path-server ADDRESS PORT
// Built by bench/whole-path.sh: cc -O2 -pthread -o whole-path-server whole-path-server.c
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define BLOCK (1 << 20)
static char block[BLOCK];

static int send_all(int fd, const char *data, size_t length) {
    while (length > 0) {
        ssize_t n = send(fd, data, length, MSG_NOSIGNAL);
        if (n <= 0) return -1;
        data += n;
        length -= (size_t)n;
    }
    return 0;
}

// True when the head has a `Connection: close` header (any case, any spaces after the colon).
static int wants_close(const char *head) {
    for (const char *line = strstr(head, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        const char *name = line + 2;
        if (strncasecmp(name, "connection:", 11) != 0) continue;
        const char *value = name + 11;
        while (*value == ' ' || *value == '\t') value++;
        if (strncasecmp(value, "close", 5) == 0) return 1;
    }
    return 0;
}

static void *serve(void *argument) {
    int fd = (int)(long)argument;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buffer[8192];
    size_t have = 0;
    for (;;) {
        char *end;
        buffer[have] = 0;
        while ((end = strstr(buffer, "\r\n\r\n")) == NULL) {
            if (have >= sizeof buffer - 1) goto done;
            ssize_t n = recv(fd, buffer + have, sizeof buffer - 1 - have, 0);
            if (n <= 0) goto done;
            have += (size_t)n;
            buffer[have] = 0;
        }
        *end = 0;
        size_t used = (size_t)(end + 4 - buffer);
        int close_after = wants_close(buffer) || strstr(buffer, " HTTP/1.0") != NULL;
        const char *trailer = close_after ? "Connection: close\r\n" : "";
        char head[256];
        if (strncmp(buffer, "GET /bytes/", 11) == 0) {
            unsigned long long size = strtoull(buffer + 11, NULL, 10);
            int length = snprintf(head, sizeof head,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %llu\r\n%s\r\n", size, trailer);
            if (send_all(fd, head, (size_t)length) < 0) goto done;
            while (size > 0) {
                size_t piece = size < BLOCK ? (size_t)size : BLOCK;
                if (send_all(fd, block, piece) < 0) goto done;
                size -= piece;
            }
        } else if (strncmp(buffer, "GET ", 4) == 0) {
            int length = snprintf(head, sizeof head,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n%s\r\nok\n", trailer);
            if (send_all(fd, head, (size_t)length) < 0) goto done;
        } else {
            static const char refused[] = "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            send_all(fd, refused, sizeof refused - 1);
            goto done;
        }
        if (close_after) goto done;
        memmove(buffer, buffer + used, have - used);
        have -= used;
    }
done:
    close(fd);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s ADDRESS PORT\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    unsigned int seed = 7;
    for (size_t i = 0; i < BLOCK; i++) block[i] = (char)(rand_r(&seed) >> 7);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &address.sin_addr) != 1) {
        fprintf(stderr, "not an IPv4 address: %s\n", argv[1]);
        return 2;
    }
    int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0 || listen(listener, 4096) < 0) {
        perror("bind/listen");
        return 1;
    }
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setstacksize(&attributes, 64 * 1024);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    for (;;) {
        int fd = accept(listener, NULL, NULL);
        if (fd < 0) continue;
        pthread_t thread;
        if (pthread_create(&thread, &attributes, serve, (void *)(long)fd) != 0) close(fd);
    }
}
