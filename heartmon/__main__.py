from heartmon.cli import main

main()
