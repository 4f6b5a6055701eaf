//! The replica shim as a program of its own (`corral-agent-shim --exit-file F --log-file L
//! -- argv...`), for this crate's tests; the `corral` binary runs the same code as
//! `corral agent-shim`.

fn main() {
    match corral_agent::shim::parse_args(std::env::args_os().skip(1)) {
        Ok(options) => std::process::exit(corral_agent::shim::run(&options)),
        Err(error) => {
            eprintln!("corral-agent-shim: {error}");
            std::process::exit(2);
        }
    }
}
