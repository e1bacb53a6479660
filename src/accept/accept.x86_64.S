# lhc-accept for x86_64 (see accept-elf.ts): lhc-accept SECONDS MAX COMMAND...
# systemd passes the listening socket as fd 3 (Accept=no). Each connection is accepted here and
# served by a fresh child running COMMAND with the connection as stdin and stdout, SIGALRM after
# SECONDS (0: never), at most MAX children at once. The sandbox around all of it is the unit's.
# SIGTERM (systemctl stop, an upgrade) drains: no more accepts, the running children finish,
# then exit 0; the socket's queue waits for the next start.
# MAX 0 (once mode): one connection, then exit 0 when its child has exited, never waiting for
# other processes (as a container's PID 1 it inherits them; a unit with Restart=on-success starts
# it again). SIGTERM ends it at once before that connection, after it once the child is done.
# Several lhc-accepts may poll one socket, so it is set O_NONBLOCK: those that lose a connection
# to another get EAGAIN from accept4 and poll again instead of blocking there, deaf to SIGTERM.
        .text
        .globl _start
_start:
        mov     (%rsp), %rbx            # argc
        cmp     $4, %rbx
        jl      usage
        mov     16(%rsp), %rdi          # argv[1]: seconds
        call    number
        mov     %rax, %r12
        mov     24(%rsp), %rdi          # argv[2]: children at most
        call    number
        xor     %r9d, %r9d
        test    %rax, %rax
        sete    %r9b                    # %r9: once mode (MAX 0),
        add     %r9, %rax               # one child at most
        mov     %rax, %r13
        lea     32(%rsp), %r14          # &argv[3]
        lea     16(%rsp,%rbx,8), %r15   # envp
        xor     %ebx, %ebx              # children running
        sub     $32, %rsp               # (%rsp): signal set, 16(%rsp): two pollfds
        movl    $4, 20(%rsp)            # fd 3 must be a listening socket, or nothing would come
        mov     $3, %edi
        mov     $1, %esi                # SOL_SOCKET
        mov     $30, %edx               # SO_ACCEPTCONN
        lea     16(%rsp), %r10
        lea     20(%rsp), %r8
        mov     $55, %eax               # getsockopt
        syscall
        test    %rax, %rax
        js      no_socket
        cmpl    $0, 16(%rsp)
        je      no_socket
        mov     $3, %edi
        mov     $3, %esi                # F_GETFL
        mov     $72, %eax               # fcntl
        syscall
        test    %rax, %rax
        js      no_socket
        mov     $3, %edi
        mov     $4, %esi                # F_SETFL
        mov     %rax, %rdx
        or      $0x800, %edx            # O_NONBLOCK (the connections accepted stay blocking)
        mov     $72, %eax               # fcntl
        syscall
        movq    $0x4000, (%rsp)         # SIGTERM
        movq    $0, 8(%rsp)
        xor     %edi, %edi              # SIG_BLOCK: it is read from a signalfd instead
        mov     %rsp, %rsi
        xor     %edx, %edx
        mov     $8, %r10d
        mov     $14, %eax               # rt_sigprocmask
        syscall
        mov     $-1, %rdi
        mov     %rsp, %rsi
        mov     $8, %edx
        mov     $0x80000, %r10d         # SFD_CLOEXEC
        mov     $289, %eax              # signalfd4
        syscall
        test    %rax, %rax
        js      no_signalfd
        mov     %rax, %r8
reap:
        mov     $-1, %rdi
        xor     %esi, %esi
        mov     $1, %edx                # WNOHANG, or block while at the limit
        xor     %eax, %eax
        cmp     %r13, %rbx
        cmovae  %eax, %edx
        xor     %r10d, %r10d
        mov     $61, %eax               # wait4
        syscall
        test    %rax, %rax
        jle     accept
        dec     %rbx
        jmp     reap
accept:
        cmp     %r13, %rbx
        jae     reap
        movl    $3, 16(%rsp)            # poll the socket and the signalfd
        movl    $1, 20(%rsp)            # POLLIN
        movl    %r8d, 24(%rsp)
        movl    $1, 28(%rsp)
        lea     16(%rsp), %rdi
        mov     $2, %esi
        mov     $-1, %edx
        mov     $7, %eax                # poll
        syscall
        test    %rax, %rax
        js      reap
        cmpw    $0, 30(%rsp)            # the signalfd's revents
        jne     drain
        cmpw    $0, 22(%rsp)            # the socket's revents
        je      reap
        mov     $3, %edi
        xor     %esi, %esi
        xor     %edx, %edx
        mov     $0x80000, %r10d         # SOCK_CLOEXEC
        mov     $288, %eax              # accept4
        syscall
        test    %rax, %rax
        js      accept_failed
        mov     %rax, %rbp
        mov     $57, %eax               # fork
        syscall
        test    %rax, %rax
        jz      child
        js      1f                      # no child (TasksMax): the client sees the connection close
        inc     %rbx
1:      mov     %rbp, %rdi
        mov     %rax, %rbp              # the child, for once mode
        mov     $3, %eax                # close
        syscall
        test    %r9, %r9
        jz      reap
        test    %rbp, %rbp              # once mode: done; without a child nothing to wait for,
        js      exit0
        jmp     close_wait              # else that child only, not what a PID 1 inherits
accept_failed:
        cmp     $-9, %rax               # EBADF, EINVAL, ENOTSOCK: no listening socket at fd 3
        je      no_socket
        cmp     $-22, %rax
        je      no_socket
        cmp     $-88, %rax
        je      no_socket
        jmp     reap                    # taken by another (EAGAIN), aborted, a signal: go on
drain:
        mov     $-1, %rbp               # wait for every child
close_wait:
        mov     $3, %edi
        mov     $3, %eax                # close the listening socket
        syscall
5:      mov     %rbp, %rdi
        xor     %esi, %esi
        xor     %edx, %edx
        xor     %r10d, %r10d
        mov     $61, %eax               # wait4 until none of them is left (ECHILD)
        syscall
        cmp     $-10, %rax
        jne     5b
exit0:
        xor     %edi, %edi
        mov     $231, %eax              # exit_group
        syscall
child:
        mov     $3, %edi
        mov     $3, %eax                # close the listening socket
        syscall
        mov     $2, %edi                # SIG_SETMASK: the command starts with none blocked
        lea     8(%rsp), %rsi
        xor     %edx, %edx
        mov     $8, %r10d
        mov     $14, %eax               # rt_sigprocmask
        syscall
        mov     %rbp, %rdi
        xor     %esi, %esi
        mov     $33, %eax               # dup2 to stdin
        syscall
        mov     %rbp, %rdi
        mov     $1, %esi
        mov     $33, %eax               # dup2 to stdout; the original closes on exec
        syscall
        test    %r12, %r12
        jz      2f
        sub     $32, %rsp               # itimerval: no interval, SECONDS once
        movq    $0, (%rsp)
        movq    $0, 8(%rsp)
        mov     %r12, 16(%rsp)
        movq    $0, 24(%rsp)
        xor     %edi, %edi              # ITIMER_REAL
        mov     %rsp, %rsi
        xor     %edx, %edx
        mov     $38, %eax               # setitimer
        syscall
2:      mov     (%r14), %rdi
        mov     %r14, %rsi
        mov     %r15, %rdx
        mov     $59, %eax               # execve
        syscall
        lea     msg_exec(%rip), %rsi
        mov     $(msg_exec_end - msg_exec), %edx
        mov     $127, %r12d
        jmp     fail
no_signalfd:
        lea     msg_signalfd(%rip), %rsi
        mov     $(msg_signalfd_end - msg_signalfd), %edx
        mov     $1, %r12d
        jmp     fail
no_socket:
        lea     msg_socket(%rip), %rsi
        mov     $(msg_socket_end - msg_socket), %edx
        mov     $1, %r12d
        jmp     fail
usage:
        lea     msg_usage(%rip), %rsi
        mov     $(msg_usage_end - msg_usage), %edx
        mov     $2, %r12d
fail:
        mov     $2, %edi
        mov     $1, %eax                # write
        syscall
        mov     %r12, %rdi
        mov     $231, %eax              # exit_group
        syscall
# %rdi: a decimal string; returns its value, or fails with the usage for anything else.
number:
        xor     %eax, %eax
        movzbl  (%rdi), %ecx
        test    %ecx, %ecx
        jz      usage
3:      movzbl  (%rdi), %ecx
        inc     %rdi
        test    %ecx, %ecx
        jz      4f
        sub     $'0', %ecx
        cmp     $9, %ecx
        ja      usage
        imul    $10, %rax, %rax
        add     %rcx, %rax
        jmp     3b
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
