//! ghost: the multi-call userland of ghostos. Subcommands arrive with their issues.

fn main() {
    eprintln!("ghost: no subcommands yet (the model, agent, wizard, console and improve issues bring them)");
    std::process::exit(2);
}
