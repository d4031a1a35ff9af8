fn main() {
    std::process::exit(vmrun::run(std::env::args_os()));
}
