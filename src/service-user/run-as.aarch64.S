// lhc-run-as for aarch64: drops to the ids in the data block that follows the code (see
// run-as-elf.ts), then execs argv[1..] with the same environment. Assembled once; the bytes are
// in run-as-elf.ts (regenerate: see the comment there).
        .text
        .globl _start
_start:
        adr     x9, data
        ldr     w0, [x9, #20]           // number of groups
        add     x1, x9, #24             // the groups
        mov     x8, #159                // setgroups
        svc     #0
        cbnz    x0, fail_ids
        ldr     w0, [x9, #16]           // gid
        mov     w1, w0
        mov     w2, w0
        mov     x8, #149                // setresgid
        svc     #0
        cbnz    x0, fail_ids
        ldr     w0, [x9, #12]           // uid
        mov     w1, w0
        mov     w2, w0
        mov     x8, #147                // setresuid
        svc     #0
        cbnz    x0, fail_ids
        ldr     x3, [sp]                // argc
        add     x1, sp, #16             // &argv[1]
        ldr     x0, [x1]
        cbz     x0, fail_exec
        add     x2, sp, x3, lsl #3
        add     x2, x2, #16             // envp
        mov     x8, #221                // execve
        svc     #0
fail_exec:
        adr     x1, msg_exec
        mov     x2, #(msg_exec_end - msg_exec)
        b       fail
fail_ids:
        adr     x1, msg_ids
        mov     x2, #(msg_ids_end - msg_ids)
fail:
        mov     x0, #2
        mov     x8, #64                 // write
        svc     #0
        mov     x0, #127
        mov     x8, #94                 // exit_group
        svc     #0
msg_ids:
        .ascii  "lhc-run-as: cannot switch to service.user's uid, gid and groups\n"
msg_ids_end:
msg_exec:
        .ascii  "lhc-run-as: cannot execute the service command\n"
msg_exec_end:
        .balign 8
data:
