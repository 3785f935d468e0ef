"""One module per `dsmctl` subcommand: parse and check options, call the library, render the result."""
