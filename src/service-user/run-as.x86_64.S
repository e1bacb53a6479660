# lhc-run-as for x86_64: drops to the ids in the data block that follows the code (see
# run-as-elf.ts), then execs argv[1..] with the same environment. Assembled once; the bytes are
# in run-as-elf.ts (regenerate: see the comment there).
        .text
        .globl _start
_start:
        lea     data(%rip), %rbx
        mov     20(%rbx), %edi          # number of groups
        lea     24(%rbx), %rsi          # the groups
        mov     $116, %eax              # setgroups
        syscall
        test    %rax, %rax
        jnz     fail_ids
        mov     16(%rbx), %edi          # gid
        mov     %edi, %esi
        mov     %edi, %edx
        mov     $119, %eax              # setresgid
        syscall
        test    %rax, %rax
        jnz     fail_ids
        mov     12(%rbx), %edi          # uid
        mov     %edi, %esi
        mov     %edi, %edx
        mov     $117, %eax              # setresuid
        syscall
        test    %rax, %rax
        jnz     fail_ids
        mov     (%rsp), %rcx            # argc
        lea     16(%rsp), %rsi          # &argv[1]
        mov     (%rsi), %rdi
        test    %rdi, %rdi
        jz      fail_exec
        lea     16(%rsp,%rcx,8), %rdx   # envp
        mov     $59, %eax               # execve
        syscall
fail_exec:
        lea     msg_exec(%rip), %rsi
        mov     $(msg_exec_end - msg_exec), %edx
        jmp     fail
fail_ids:
        lea     msg_ids(%rip), %rsi
        mov     $(msg_ids_end - msg_ids), %edx
fail:
        mov     $2, %edi
        mov     $1, %eax                # write
        syscall
        mov     $127, %edi
        mov     $231, %eax              # exit_group
        syscall
msg_ids:
        .ascii  "lhc-run-as: cannot switch to service.user's uid, gid and groups\n"
msg_ids_end:
msg_exec:
        .ascii  "lhc-run-as: cannot execute the service command\n"
msg_exec_end:
        .balign 8
data:
