// lhc-accept for aarch64 (see accept-elf.ts): lhc-accept SECONDS MAX COMMAND...
// systemd passes the listening socket as fd 3 (Accept=no). Each connection is accepted here and
// served by a fresh child running COMMAND with the connection as stdin and stdout, SIGALRM after
// SECONDS (0: never), at most MAX children at once. The sandbox around all of it is the unit's.
// SIGTERM (systemctl stop, an upgrade) drains: no more accepts, the running children finish,
// then exit 0; the socket's queue waits for the next start.
// MAX 0 (once mode): one connection, then exit 0 when its child has exited, never waiting for
// other processes (as a container's PID 1 it inherits them; a unit with Restart=on-success starts
// it again). SIGTERM ends it at once before that connection, after it once the child is done.
// Several lhc-accepts may poll one socket, so it is set O_NONBLOCK: those that lose a connection
// to another get EAGAIN from accept4 and poll again instead of blocking there, deaf to SIGTERM.
        .text
        .globl _start
_start:
        ldr     x19, [sp]               // argc
        cmp     x19, #4
        b.lt    usage
        ldr     x0, [sp, #16]           // argv[1]: seconds
        bl      number
        mov     x20, x0
        ldr     x0, [sp, #24]           // argv[2]: children at most
        bl      number
        cmp     x0, #0
        cset    x27, eq                 // x27: once mode (MAX 0),
        add     x21, x0, x27            // one child at most
        add     x22, sp, #32            // &argv[3]
        add     x23, sp, x19, lsl #3
        add     x23, x23, #16           // envp
        mov     x24, #0                 // children running
        sub     sp, sp, #32             // [sp]: signal set, [sp+16]: two pollfds
        mov     w0, #4                  // fd 3 must be a listening socket, or nothing would come
        str     w0, [sp, #20]
        mov     x0, #3
        mov     x1, #1                  // SOL_SOCKET
        mov     x2, #30                 // SO_ACCEPTCONN
        add     x3, sp, #16
        add     x4, sp, #20
        mov     x8, #209                // getsockopt
        svc     #0
        tbnz    x0, #63, no_socket
        ldr     w0, [sp, #16]
        cbz     w0, no_socket
        mov     x0, #3
        mov     x1, #3                  // F_GETFL
        mov     x8, #25                 // fcntl
        svc     #0
        tbnz    x0, #63, no_socket
        orr     x2, x0, #0x800          // O_NONBLOCK (the connections accepted stay blocking)
        mov     x0, #3
        mov     x1, #4                  // F_SETFL
        mov     x8, #25                 // fcntl
        svc     #0
        mov     x0, #0x4000             // SIGTERM
        stp     x0, xzr, [sp]
        mov     x0, #0                  // SIG_BLOCK: it is read from a signalfd instead
        mov     x1, sp
        mov     x2, #0
        mov     x3, #8
        mov     x8, #135                // rt_sigprocmask
        svc     #0
        mov     x0, #-1
        mov     x1, sp
        mov     x2, #8
        mov     x3, #0x80000            // SFD_CLOEXEC
        mov     x8, #74                 // signalfd4
        svc     #0
        tbnz    x0, #63, no_signalfd
        mov     x26, x0
reap:
        mov     x0, #-1
        mov     x1, #0
        mov     x2, #1                  // WNOHANG, or block while at the limit
        cmp     x24, x21
        csel    x2, xzr, x2, hs
        mov     x3, #0
        mov     x8, #260                // wait4
        svc     #0
        cmp     x0, #0
        b.le    accept
        sub     x24, x24, #1
        b       reap
accept:
        cmp     x24, x21
        b.hs    reap
        mov     x0, #3                  // poll the socket and the signalfd
        mov     x1, #1                  // POLLIN
        lsl     x1, x1, #32
        orr     x0, x0, x1
        orr     x2, x26, x1
        stp     x0, x2, [sp, #16]
        add     x0, sp, #16
        mov     x1, #2
        mov     x2, #0
        mov     x3, #0
        mov     x4, #8
        mov     x8, #73                 // ppoll
        svc     #0
        tbnz    x0, #63, reap
        ldrh    w0, [sp, #30]           // the signalfd's revents
        cbnz    w0, drain
        ldrh    w0, [sp, #22]           // the socket's revents
        cbz     w0, reap
        mov     x0, #3
        mov     x1, #0
        mov     x2, #0
        mov     x3, #0x80000            // SOCK_CLOEXEC
        mov     x8, #242                // accept4
        svc     #0
        tbnz    x0, #63, accept_failed
        mov     x25, x0
        mov     x0, #17                 // clone(SIGCHLD): fork
        mov     x1, #0
        mov     x2, #0
        mov     x3, #0
        mov     x4, #0
        mov     x8, #220                // clone
        svc     #0
        cbz     x0, child
        tbnz    x0, #63, 1f             // no child (TasksMax): the client sees the connection close
        add     x24, x24, #1
1:      mov     x28, x0                 // the child, for once mode
        mov     x0, x25
        mov     x8, #57                 // close
        svc     #0
        cbz     x27, reap
        tbnz    x28, #63, exit0         // once mode: done; without a child nothing to wait for,
        b       close_wait              // else that child only, not what a PID 1 inherits
accept_failed:
        cmn     x0, #9                  // EBADF, EINVAL, ENOTSOCK: no listening socket at fd 3
        b.eq    no_socket
        cmn     x0, #22
        b.eq    no_socket
        cmn     x0, #88
        b.eq    no_socket
        b       reap                    // taken by another (EAGAIN), aborted, a signal: go on
drain:
        mov     x28, #-1                // wait for every child
close_wait:
        mov     x0, #3
        mov     x8, #57                 // close the listening socket
        svc     #0
5:      mov     x0, x28
        mov     x1, #0
        mov     x2, #0
        mov     x3, #0
        mov     x8, #260                // wait4 until none of them is left (ECHILD)
        svc     #0
        cmn     x0, #10
        b.ne    5b
exit0:
        mov     x0, #0
        mov     x8, #94                 // exit_group
        svc     #0
child:
        mov     x0, #3
        mov     x8, #57                 // close the listening socket
        svc     #0
        mov     x0, #2                  // SIG_SETMASK: the command starts with none blocked
        add     x1, sp, #8
        mov     x2, #0
        mov     x3, #8
        mov     x8, #135                // rt_sigprocmask
        svc     #0
        mov     x0, x25
        mov     x1, #0
        mov     x2, #0
        mov     x8, #24                 // dup3 to stdin
        svc     #0
        mov     x0, x25
        mov     x1, #1
        mov     x8, #24                 // dup3 to stdout; the original closes on exec
        svc     #0
        cbz     x20, 2f
        sub     sp, sp, #32             // itimerval: no interval, SECONDS once
        stp     xzr, xzr, [sp]
        stp     x20, xzr, [sp, #16]
        mov     x0, #0                  // ITIMER_REAL
        mov     x1, sp
        mov     x2, #0
        mov     x8, #103                // setitimer
        svc     #0
2:      ldr     x0, [x22]
        mov     x1, x22
        mov     x2, x23
        mov     x8, #221                // execve
        svc     #0
        adr     x1, msg_exec
        mov     x2, #(msg_exec_end - msg_exec)
        mov     x3, #127
        b       fail
no_signalfd:
        adr     x1, msg_signalfd
        mov     x2, #(msg_signalfd_end - msg_signalfd)
        mov     x3, #1
        b       fail
no_socket:
        adr     x1, msg_socket
        mov     x2, #(msg_socket_end - msg_socket)
        mov     x3, #1
        b       fail
usage:
        adr     x1, msg_usage
        mov     x2, #(msg_usage_end - msg_usage)
        mov     x3, #2
fail:
        mov     x0, #2
        mov     x8, #64                 // write
        svc     #0
        mov     x0, x3
        mov     x8, #94                 // exit_group
        svc     #0
// x0: a decimal string; returns its value, or fails with the usage for anything else.
number:
        mov     x1, x0
        mov     x0, #0
        ldrb    w2, [x1]
        cbz     w2, usage
        mov     x3, #10
3:      ldrb    w2, [x1], #1
        cbz     w2, 4f
        sub     w2, w2, #'0'
        cmp     w2, #9
        b.hi    usage
        madd    x0, x0, x3, x2
        b       3b
4:      ret
msg_usage:
        .ascii  "lhc-accept: usage: lhc-accept SECONDS MAX COMMAND... (MAX 0: one connection)\n"
msg_usage_end:
msg_socket:
        .ascii  "lhc-accept: no listening socket at fd 3 (start me from a socket unit with Accept=no)\n"
msg_socket_end:
msg_signalfd:
        .ascii  "lhc-accept: cannot watch for SIGTERM (signalfd)\n"
msg_signalfd_end:
msg_exec:
        .ascii  "lhc-accept: cannot execute the service command\n"
msg_exec_end:
        .balign 8
