//! `xenio-bench`: see `xenio-bench --help` and the `xenio_bench` crate docs.
#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;
use xenio_bench::cli::{Cli, Command};

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Study(args) => match xenio_bench::study::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xenio-bench study: error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Blk(args) => match xenio_bench::blk::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xenio-bench blk: error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Net(args) => match xenio_bench::net::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xenio-bench net: error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Ring(args) => match xenio_bench::ring::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xenio-bench ring: error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::RingPeer(args) => match xenio_bench::ring::run_peer(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xenio-bench ring-peer (`{}`): error: {e}", args.config);
                ExitCode::from(2)
            }
        },
    }
}
