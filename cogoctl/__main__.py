from cogoctl.cli.app import main

main()
