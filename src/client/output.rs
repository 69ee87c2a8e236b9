//! What ratectl prints, in one place: every command returns its result as text lines and as one
//! JSON object ([`Printed`]) or a [`Failure`]; [`Output`] prints the form `--json` asks for and
//! gives the exit code. Exit codes: 0 success, 1 a failed command (or an invalid tariff file),
//! 2 bad usage (clap's).

use std::process::ExitCode;

use serde_json::json;

/// A command's result in both forms.
pub struct Printed {
    /// Lines for people (none is allowed: an empty listing prints nothing).
    pub lines: Vec<String>,
    /// The JSON object, serialized (a struct keeps its field order, a `json!` map is sorted).
    pub json: String,
    /// False for a result that is a negative answer rather than a failure to run (an invalid
    /// tariff file): its text goes to standard error and the exit code is 1.
    pub ok: bool,
}

impl Printed {
    pub fn new(lines: Vec<String>, json: impl ToString) -> Printed {
        Printed {
            lines,
            json: json.to_string(),
            ok: true,
        }
    }

    /// One line of text.
    pub fn line(text: impl Into<String>, json: impl ToString) -> Printed {
        Printed::new(vec![text.into()], json)
    }
}

/// A failure to report: one line of text, or a JSON error object.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    /// The reject reason, when the failure is an event's (`tariffs quote`).
    pub reason: Option<&'static str>,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            reason: None,
        }
    }
}

/// A failed call to ratingd: its status code and message.
pub fn rpc_failure(s: tonic::Status) -> Failure {
    Failure::new(format!("{:?}: {}", s.code(), s.message()))
}

/// How results are printed (`--json` or text).
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// Prints a result or a failure and gives the exit code.
    pub fn finish(self, result: Result<Printed, Failure>) -> ExitCode {
        match result {
            Ok(printed) => {
                if self.json {
                    println!("{}", printed.json);
                } else if printed.ok {
                    printed.lines.iter().for_each(|l| println!("{l}"));
                } else {
                    printed.lines.iter().for_each(|l| eprintln!("{l}"));
                }
                if printed.ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(failure) => {
                if self.json {
                    let mut object = json!({ "error": failure.message });
                    if let Some(reason) = failure.reason {
                        object["reason"] = json!(reason);
                    }
                    println!("{object}");
                } else {
                    eprintln!("ratectl: {}", failure.message);
                }
                ExitCode::from(1)
            }
        }
    }
}
