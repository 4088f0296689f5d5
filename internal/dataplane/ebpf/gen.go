package ebpf

// The BPF objects and their Go bindings are generated and committed, so building rampart needs no
// clang; `make generate` (clang, llvm, libbpf-dev) reproduces them.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -target bpfel -type endpoint -type ipcache_key -type policy_key -type policy_value -type ct_key -type ct_value -type svc_key -type svc_value -type backend_key -type backend_value -type revnat_key -type revnat_value -type svc_range -type svc_flag -type nat_out_key -type nat_out_value -type nat_back_key -type nat_back_value -type host_config -type ep_flag -type ct_flag -type flow_event -type block_key -type block_value -type syn_limit -type syn_bucket_key -type quarantine_port -type shield -type drop_kind policy bpf/policy.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -target bpfel -type lb_svc_key -type lb_svc_value -type lb_backend_key -type lb_backend_value -type lb_revnat_key -type lb_revnat_value -type lb_flow_key sock bpf/sock.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu
