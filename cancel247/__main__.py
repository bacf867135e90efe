from cancel247.cli import main

main()
