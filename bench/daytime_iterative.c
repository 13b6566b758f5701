/*
 * The seed's "TCP Daytime Iterative Server", as written there, with two
 * changes for the bench: the port is the first argument (and bound on
 * 127.0.0.1 with SO_REUSEADDR), and the backlog is 128 instead of 10 so
 * that 32 concurrent connects measure the server, not SYN drops.
 */
#include <sys/types.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>

#define MAXLINE 80
#define BACKLOG 128

int main(int argc, char *argv[])
{
    int list_fd, conn_fd, one = 1;
    struct sockaddr_in serv_add;
    socklen_t len = sizeof(serv_add);
    char buffer[MAXLINE];
    time_t timeval;

    if (argc != 2) {
        fprintf(stderr, "usage: daytime_iterative PORT\n");
        exit(2);
    }
    list_fd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(list_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&serv_add, 0, sizeof(serv_add));
    serv_add.sin_family = AF_INET;
    serv_add.sin_port = htons(atoi(argv[1]));
    serv_add.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(list_fd, (struct sockaddr *)&serv_add, sizeof(serv_add)) < 0) {
        perror("bind");
        exit(1);
    }
    listen(list_fd, BACKLOG);
    getsockname(list_fd, (struct sockaddr *)&serv_add, &len);
    fprintf(stderr, "listening on 127.0.0.1:%d\n", ntohs(serv_add.sin_port));

    while (1)
    {
        conn_fd = accept(list_fd, (struct sockaddr *) NULL, NULL);
        timeval = time(NULL);
        snprintf(buffer, sizeof(buffer), "%.24s\r\n", ctime(&timeval));
        write(conn_fd, buffer, strlen(buffer));
        close(conn_fd);
    }
    close(list_fd);
    exit(0);
}
