from cogoctl.cli.main import main

main()
