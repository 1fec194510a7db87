//! The xenrpc host server: `xenrpc-hostd --socket PATH` (see `--help`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = xenrpc_host::hostd::main_with_args(&args) {
        eprintln!("xenrpc-hostd: {e}");
        std::process::exit(1);
    }
}
