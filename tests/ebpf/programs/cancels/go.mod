module wukong.dev/tests/ebpf/cancels

go 1.24
