//! Writes every target's seeds from the fixtures into a corpus directory:
//! `cargo run -p korder-fuzz --example seeds -- FIXTURES_DIR CORPUS_DIR`
//! (scripts/fuzz runs it before fuzzing).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [fixtures, corpus] = args.as_slice() else {
        eprintln!("usage: seeds FIXTURES_DIR CORPUS_DIR");
        return ExitCode::from(2);
    };
    let corpus = PathBuf::from(corpus);
    let seeds = korder_fuzz::seeds::seeds(&PathBuf::from(fixtures));
    for seed in &seeds {
        let dir = corpus.join(seed.target);
        if let Err(e) = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join(&seed.name), &seed.bytes))
        {
            eprintln!("seeds: {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    println!("{} seeds written to {}", seeds.len(), corpus.display());
    ExitCode::SUCCESS
}
