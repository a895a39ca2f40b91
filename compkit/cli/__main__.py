from compkit.cli.app import main

main()
