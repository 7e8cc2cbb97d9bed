fn main() {
    std::process::exit(trigger_ops::main());
}
